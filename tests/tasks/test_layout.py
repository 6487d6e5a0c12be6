"""One home for provenance: each DVC stage's code deps are the files its module imports (the
same list the skip logic hashes), a family's stages read its own model file only, stages never
import each other, and every model variant trains the same way."""

import ast
import json
import logging
import logging.handlers
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

from genzoo.models import REGISTRY
from genzoo.tasks import layout
from genzoo.tasks.config import validate
from genzoo.tasks.data import data_spec, load_split
from genzoo.tasks.layout import (
    ROOT,
    code_files,
    code_hash,
    family_files,
    module_code_hash,
    read_json,
    train_variant,
)
from genzoo.tasks.prepare import prepare
from tests.conftest import tiny_params

STAGES = {"prepare", "train", "evaluate", "detect", "usefulness", "augment", "report", "status", "judge"}
GROUND = {
    "config",
    "data",
    "errors",
    "layout",
    "tracking",
    "quality",
    "sample",
    "latent",
    "figures",
    "formats",
}
CODE_DIRS = ("models/", "tasks/", "metrics/")


def _code_deps(deps: list) -> list[str]:
    names = [d if isinstance(d, str) else next(iter(d)) for d in deps]
    return sorted(d for d in names if d.startswith(CODE_DIRS) and d.endswith(".py"))


def test_a_files_imports_are_parsed_once_per_content_and_again_after_an_edit(tmp_path):
    """Every stage's key walks the files it imports; a file read by many stages (tasks/config.py)
    is parsed once per content, not once per stage; an edit is parsed anew."""
    layout._imported_names.cache_clear()
    f = tmp_path / "stage.py"
    f.write_text("import genzoo.models.base\n")
    assert layout._imports(f, ROOT) == {"models/__init__.py", "models/base.py"}
    layout._imports(f, ROOT)
    assert layout._imported_names.cache_info().hits == 1
    f.write_text("def later():\n    from genzoo.tasks import config\n")  # a lazy import counts too
    assert layout._imports(f, ROOT) == {"tasks/__init__.py", "tasks/config.py"}


def test_dvc_code_deps_are_the_imports_the_skip_logic_hashes():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages, "no stages in dvc.yaml"
    for name, stage in stages.items():
        body = stage.get("do", stage)
        _, _, target, *args = body["cmd"].split()  # python -m genzoo.tasks.<module> [family]
        module = target.removeprefix("genzoo.tasks.")
        per_family = args and args[0] in ("${key}", "${item}")
        for family in REGISTRY if per_family else [None]:
            deps = [d.replace(args[0], family) if per_family else d for d in map(str, body["deps"])]
            listed, read = _code_deps(deps), list(code_files(module, family))
            hint = ""
            if per_family and any(d.startswith("models/") for d in set(listed) ^ set(read)):
                hint = "; a foreach stage's code deps are every family's: a model file imports only "
                hint += "genzoo.models.base and genzoo.models.layers"
            assert listed == read, (
                f"dvc.yaml, stage {name}{'@' + family if family else ''}: code deps to add "
                f"{sorted(set(read) - set(listed))}, to remove {sorted(set(listed) - set(read))} "
                f"(tasks/{module}.py's imports; each listed once){hint}"
            )


def test_the_synthetic_datasets_stage_lists_every_params_block_that_decides_it():
    """`augment` trains its teacher by usefulness.cnn, scores its draw by evaluate.* and the
    seed, and samples with the run's threads: with usefulness.families empty no upstream
    output changes with them, so without these params `dvc repro` kept the old teacher's labels."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["augment"]
    listed = set(stage["params"])
    assert {"seed", "augment", "recipes", "usefulness", "evaluate", "run.threads", "ray.resources"} <= listed


def test_the_usefulness_stages_list_every_usefulness_key_but_the_families_list():
    """usefulness-reference and usefulness@<family> listed the usefulness block whole: a family
    added to usefulness.families made every measured family stale, and DVC, which removes a
    stage's outputs before it runs it, retrained each one's generators on the subsets from step
    0. Each lists every key that decides its figures, and a key added to the block is listed."""
    from genzoo.tasks.config import UsefulnessParams

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    fields = set(UsefulnessParams.model_fields)
    for name, leave_out in (("usefulness-reference", {"families", "train"}), ("usefulness", {"families"})):
        listed = set(stages[name].get("do", stages[name])["params"])
        keys = {p.removeprefix("usefulness.") for p in listed if p.startswith("usefulness.")}
        want = fields - leave_out
        assert "usefulness" not in listed and keys == want, (name, sorted(keys ^ want))
    report = set(stages["report"]["params"])
    assert {"models", "data", "evaluate"} <= report  # the families on the page, the source, the latency
    assert "evaluate.baselines" not in stages["detect"]["do"]["params"]  # the benchmark reads none
    for name in ("train", "detect", "usefulness"):  # run.device is in their keys (off the CPU)
        assert "run.device" in stages[name]["do"]["params"], name


def test_checkpointing_more_often_keeps_the_checkpoint_folder(tmp_path):
    """`train.checkpoint_every` and `keep_checkpoints` decide what is written, not the weights (a
    resume lands on the same parameters): they named the checkpoint folder, so a user who stopped
    a long training to checkpoint more often started it again from step 0 in a new folder. The
    model's own key keeps them (dvc.yaml's train@ lists `train` whole: both make it again)."""
    from genzoo.tasks.layout import checkpoints_key, train_key

    manifest = {"splits": {s: {"sha256": s} for s in ("train", "val", "test")}}
    raw = tiny_params(tmp_path, steps=300, families=["gan"])
    before = validate(raw)
    more = validate({**raw, "train": {**raw["train"], "checkpoint_every": 3, "keep_checkpoints": 5}})
    assert checkpoints_key(more, "gan", manifest) == checkpoints_key(before, "gan", manifest)
    assert train_key(more, "gan", manifest) != train_key(before, "gan", manifest)
    grid = validate({**raw, "run": {**raw["run"], "samples_per_class": 7}})  # the sample grid's size
    assert checkpoints_key(grid, "gan", manifest) == checkpoints_key(before, "gan", manifest)
    assert train_key(grid, "gan", manifest) != train_key(before, "gan", manifest)
    longer = validate({**raw, "train": {**raw["train"], "steps": 301}})
    assert checkpoints_key(longer, "gan", manifest) != checkpoints_key(before, "gan", manifest)


def test_a_family_reads_its_own_model_file_only():
    own = family_files()
    assert own["vae"] == "models/vae.py"
    for stage in ("train", "evaluate", "detect", "usefulness"):
        files = code_files(stage, "vae")
        assert "models/vae.py" in files and f"tasks/{stage}.py" in files
        assert not set(files) & (set(own.values()) - {"models/vae.py"}), stage
    assert not set(code_files("evaluate")) & set(own.values())  # the evaluator: no family
    assert "tasks/layout.py" in code_files("train", "gan")  # ground floor, read transitively
    assert "metrics/anomaly.py" in code_files("detect", "gan")  # a lazy or nested import counts


def test_editing_one_family_changes_only_its_hash(tmp_path):
    for d in ("models", "tasks", "metrics"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    before = {f: code_hash("train", f, tmp_path) for f in ("vae", "gan")}
    assert before == {f: code_hash("train", f) for f in ("vae", "gan")}  # the copy hashes the same
    with open(tmp_path / "models" / "vae.py", "a") as fh:
        fh.write("\n# an edit\n")
    after = {f: code_hash("train", f, tmp_path) for f in ("vae", "gan")}
    assert after["vae"] != before["vae"] and after["gan"] == before["gan"]
    with open(tmp_path / "tasks" / "layout.py", "a") as fh:
        fh.write("\n# shared code: every family\n")
    assert code_hash("train", "gan", tmp_path) != before["gan"]


def test_a_stored_teacher_is_keyed_by_every_file_the_evaluator_imports(tmp_path):
    """The teachers stored in runs/teachers were keyed by models/evaluator.py's bytes alone: an
    edit to models/base.py (the pixels the CNN sees) ran the stages again, which reloaded the
    old teachers, while a fresh clone trained new ones."""
    for d in ("models", "tasks", "metrics"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    before = module_code_hash("genzoo.models.evaluator", tmp_path)
    assert before == module_code_hash("genzoo.models.evaluator")
    with open(tmp_path / "models" / "vae.py", "a") as fh:  # a family's file: not the evaluator's code
        fh.write("\n# an edit\n")
    assert module_code_hash("genzoo.models.evaluator", tmp_path) == before
    with open(tmp_path / "models" / "base.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert module_code_hash("genzoo.models.evaluator", tmp_path) != before
    with pytest.raises(ValueError, match="not a genzoo module"):
        module_code_hash("torch.nn")


def test_the_teachers_key_follows_the_evaluators_code(monkeypatch):
    from genzoo.models.base import DataSpec
    from genzoo.models.evaluator import EvaluatorConfig
    from genzoo.tasks.sample import Teachers

    x, y = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    spec = DataSpec(channels=1, height=8, width=8, num_classes=2, levels=17)
    key = Teachers(x, y, spec, EvaluatorConfig())._key(1)
    assert Teachers(x, y, spec, EvaluatorConfig())._key(1) == key
    monkeypatch.setattr(layout, "module_code_hash", lambda module: "edited")
    assert Teachers(x, y, spec, EvaluatorConfig())._key(1) != key


def test_every_module_of_models_but_the_shared_ones_is_a_registered_family():
    """models/__init__.py imports every module but ``NOT_FAMILIES`` to register its family (adding
    a family is its file; a list here made each addition retrain the others): a shared module
    added to models/ belongs in NOT_FAMILIES."""
    import pkgutil

    from genzoo import models

    modules = {m.name for m in pkgutil.iter_modules(models.__path__)}
    assert modules >= models.NOT_FAMILIES
    assert {Path(f).stem for f in family_files().values()} == modules - models.NOT_FAMILIES
    assert list(models.FAMILIES) == sorted(models.FAMILIES)


def test_stages_import_only_the_ground_floor():
    modules = {p.stem for p in (ROOT / "tasks").glob("*.py")} - {"__init__"}
    assert modules == STAGES | GROUND, "classify the new module as a stage or ground floor"
    for name in modules:
        tree = ast.parse((ROOT / "tasks" / f"{name}.py").read_text())
        used = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "genzoo.tasks":
                used |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("genzoo.tasks."):
                used.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                used |= {a.name.split(".")[2] for a in node.names if a.name.startswith("genzoo.tasks.")}
        bad = used & STAGES - {name}
        assert not bad, f"tasks/{name}.py imports the stage(s) {sorted(bad)}"
        if name in GROUND:
            assert not used & STAGES, f"ground floor tasks/{name}.py imports a stage"


def test_read_json_is_none_for_missing_or_partial_files(tmp_path):
    assert read_json(tmp_path / "nope.json") is None
    (tmp_path / "half.json").write_text('{"a": ')
    assert read_json(tmp_path / "half.json") is None
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "ok.json") == {"a": 1}


def test_a_variant_is_the_same_whatever_ran_before_and_is_saved_only_when_whole(tmp_path, caplog):
    params = validate(tiny_params(tmp_path, steps=4, families=["gan"]))
    prepare(params)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    spec, cfg = data_spec(manifest), params.train_config("gan")

    def stamp(r):
        return {"key": "k", "steps": r.steps}

    with caplog.at_level("INFO", logger="genzoo.train"):
        a, _ = train_variant(params, "gan", x[:64], y[:64], spec, cfg, tmp_path / "a.json", stamp)
    # a variant says it trains as training, not as "layout" (a detect retrain's line was tagged so)
    said = [r.name for r in caplog.records if "parameters, 4 steps on cpu" in r.getMessage()]
    assert said == ["genzoo.train"]
    torch.rand(1000)  # other work in a reused worker moves the global RNG
    b, _ = train_variant(params, "gan", x[:64], y[:64], spec, cfg, tmp_path / "b.json", stamp)
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert read_json(tmp_path / "a.json")["sha256"] == read_json(tmp_path / "b.json")["sha256"]
    model, meta = layout.cached_variant(tmp_path / "a.json", "k")
    assert meta["steps"] == 4 and layout.cached_variant(tmp_path / "a.json", "other") is None
    _, r = train_variant(params, "gan", x[:64], y[:64], spec, cfg, tmp_path / "c.json", stamp, stop_at=2)
    assert r.steps == 2 and not (tmp_path / "c.json").exists()  # interrupted: no model
    with pytest.raises(KeyError, match="models.vae: not in params"):
        train_variant(params, "vae", x, y, spec, cfg, tmp_path / "d.json", stamp)


def test_every_stage_command_line_reads_target_params_file_and_overrides(tmp_path):
    from genzoo.tasks.config import stage_args

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(tiny_params(tmp_path, steps=3, families=["gan"])))
    params, family = stage_args(["gan", "--params", str(path), "models.gan.train.steps=5"], "t", "family")
    assert family == "gan" and params.train_config("gan").steps == 5
    params, none = stage_args(["--params", str(path)], "t")
    assert none is None and params.train_config("gan").steps == 3


# ----------------------------------------------------------------------------- replacing a folder


def _genzoo_folder(path, version: str, kind: str = "prepared-data"):
    """A folder as genzoo writes it: its files and a marked manifest naming ``version``."""
    path.mkdir(parents=True)
    (path / "train.npz").write_bytes(version.encode())
    (path / "manifest.json").write_text(json.dumps({**layout.mark(kind), "v": version}))
    return path


def _write_version(tmp, version: str, kind: str = "prepared-data") -> None:
    (tmp / "train.npz").write_bytes(version.encode())
    (tmp / "manifest.json").write_text(json.dumps({**layout.mark(kind), "v": version}))


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_written_atomically_get_the_mode_the_users_umask_gives(tmp_path, mask, file_mode, dir_mode):
    """A file written through a temp file (``atomic_write``) and a folder swapped in whole
    (``replacing_dir``) are readable as a plain write would leave them: under umask 022 the
    report, the models and a dataset's folder are 0644 / 0755 (tempfile's 0600 / 0700 before),
    and a stricter umask keeps them private."""
    from genzoo.models.base import atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "index.html", "<html></html>")
        with layout.replacing_dir(tmp_path / "prepared", "prepared-data") as tmp:
            _write_version(tmp, "new")
    finally:
        os.umask(old)
    assert (tmp_path / "index.html").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "prepared").stat().st_mode & 0o777 == dir_mode


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a, b = _genzoo_folder(tmp_path / "a", "old"), _genzoo_folder(tmp_path / "b", "new")
    assert layout.exchange_dirs(a, b)  # ext4/tmpfs/xfs/btrfs on Linux: the kernel exchanges
    assert read_json(a / "manifest.json")["v"] == "new" and read_json(b / "manifest.json")["v"] == "old"


def test_where_no_exchange_exists_two_renames_swap_and_keep_the_old_until_the_new_is_in(tmp_path):
    target, new = _genzoo_folder(tmp_path / "prepared", "old"), _genzoo_folder(tmp_path / "new", "new")
    aside = layout._swap_by_renames(new, target)
    assert read_json(target / "manifest.json")["v"] == "new"
    assert read_json(aside / "prepared" / "manifest.json")["v"] == "old" and not new.exists()
    # the second rename failing puts the old folder back
    with pytest.raises(FileNotFoundError):
        layout._swap_by_renames(tmp_path / "missing", target)
    assert read_json(target / "manifest.json")["v"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["prepared", aside.name])  # no second aside


def test_the_new_folder_is_on_disk_before_it_replaces_the_old(tmp_path, monkeypatch):
    """A dataset's files were in the page cache alone when the old version was deleted: a crash
    just after could leave neither whole."""
    target = _genzoo_folder(tmp_path / "prepared", "old")
    calls = []
    real = layout.durable

    def spy(folder, files=True):
        calls.append(
            (Path(folder), files, read_json(target / "manifest.json")["v"] if target.exists() else None)
        )
        return real(folder, files)

    monkeypatch.setattr(layout, "durable", spy)
    with layout.replacing_dir(target, "prepared-data") as tmp:
        _write_version(tmp, "new")
    assert calls == [(tmp, True, "old"), (tmp_path, False, "new")]  # synced while the old was in place
    calls.clear()
    with layout.replacing_dir(tmp_path / "fresh", "prepared-data") as tmp:  # no old one: a rename
        _write_version(tmp, "first")
    assert [c[:2] for c in calls] == [(tmp, True), (tmp_path, False)]
    # without syncfs: each file and folder fsynced, then the folder itself
    (tmp_path / "fresh" / "sub").mkdir()
    (tmp_path / "fresh" / "sub" / "f").write_text("x")
    monkeypatch.setattr(layout, "_syncfs", lambda fd: False)
    synced, fsync = [], os.fsync
    monkeypatch.setattr(
        layout.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or fsync(fd)
    )
    real(tmp_path / "fresh")
    fresh = tmp_path / "fresh"
    assert sorted(synced) == sorted(str(x) for x in [fresh, *fresh.rglob("*")])


def test_a_partial_copy_a_killed_write_left_is_removed_by_the_next_write(tmp_path):
    """A write killed outright (SIGKILL, the OOM killer) left its hidden partial copy beside the
    folder; every retry added another. The next write removes those whose writer's lock is free
    (it died), and no other: a live writer's, whatever its process number or container."""
    import signal
    import subprocess

    target = _genzoo_folder(tmp_path / "prepared", "old")
    writer = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path; from genzoo.tasks import layout\n"
            f"with layout.replacing_dir(Path({str(target)!r}), 'prepared-data') as tmp:\n"
            "    (tmp / 'train.npz').write_bytes(b'part'); print(tmp.name, flush=True); time.sleep(120)"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        part = tmp_path / writer.stdout.readline().strip()
        assert part.is_dir() and part.with_name(part.name + ".lock").is_file()
        layout._remove_abandoned(target)  # its writer is alive: kept
        assert (part / "train.npz").read_bytes() == b"part"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert part.is_dir()  # what a killed write leaves
    unlocked = tmp_path / ".prepared.abc123"  # a folder with no lock file (an older genzoo's, a swap's copy)
    (unlocked / "part").mkdir(parents=True)
    elsewhere = tmp_path / ".prepared.otherhost.xyz789"  # another host's (its lock may be host-local)
    (elsewhere / "part").mkdir(parents=True)
    elsewhere.with_name(elsewhere.name + ".lock").write_text("")
    said = logging.handlers.BufferingHandler(100)  # (caplog's handler is gone once Prefect was imported)
    logging.getLogger("genzoo.train").addHandler(said)
    try:
        with layout.replacing_dir(target, "prepared-data") as tmp:
            _write_version(tmp, "new")
    finally:
        logging.getLogger("genzoo.train").removeHandler(said)
    assert not part.exists() and not part.with_name(part.name + ".lock").exists()
    assert unlocked.is_dir() and elsewhere.is_dir()
    assert f"removing {part.name}, left by an interrupted write" in "\n".join(
        r.getMessage() for r in said.buffer
    )
    assert read_json(target / "manifest.json")["v"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no lock of this host's left
        ".prepared.abc123",
        ".prepared.otherhost.xyz789",
        ".prepared.otherhost.xyz789.lock",
        "prepared",
    ]


def test_the_old_folder_is_deleted_only_once_the_new_one_is_in_place(tmp_path, monkeypatch):
    target = _genzoo_folder(tmp_path / "prepared", "old")
    seen, rmtree = [], shutil.rmtree

    def spy(path, *args, **kwargs):  # what the target and the deleted folder hold at that moment
        if Path(path).exists():
            seen.append((read_json(target / "manifest.json")["v"], read_json(Path(path) / "manifest.json")))
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(layout.shutil, "rmtree", spy)
    renames = []
    real_replace, real_rename = os.replace, os.rename

    def watch(fn):
        def moved(src, dst, *a, **k):
            out = fn(src, dst, *a, **k)
            renames.append(target.exists())  # the target is never missing after a rename
            return out

        return moved

    monkeypatch.setattr(layout.os, "replace", watch(real_replace))
    monkeypatch.setattr(layout.os, "rename", watch(real_rename))
    with layout.replacing_dir(target, "prepared-data") as tmp:
        _write_version(tmp, "new")
    assert [(t, d["v"]) for t, d in seen] == [("new", "old")]
    assert all(renames)
    assert read_json(target / "manifest.json")["v"] == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_a_reader_sees_a_whole_old_or_whole_new_folder_at_every_moment(tmp_path):
    target = _genzoo_folder(tmp_path / "prepared", "0")
    stop, bad, reads = threading.Event(), [], [0]

    def reader():
        while not stop.is_set():
            m = read_json(target / "manifest.json")
            try:
                data = int((target / "train.npz").read_bytes())
            except FileNotFoundError:
                data = None
            # versions only grow: the data read after the manifest is of its version or newer
            if m is None or data is None or data < int(m["v"]):
                bad.append((m, data))
            reads[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 150):
            with layout.replacing_dir(target, "prepared-data") as tmp:
                _write_version(tmp, str(i))
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert reads[0] > 150 and bad == []


def test_a_folder_genzoo_did_not_write_is_refused_and_kept(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with (
        pytest.raises(layout.NotGenzooOutput, match=f"{mine}: not a genzoo prepared-data folder"),
        layout.replacing_dir(mine, "prepared-data") as tmp,
    ):
        _write_version(tmp, "new")
    assert (mine / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # nothing written beside it


def test_a_genzoo_folder_someone_added_files_to_is_refused(tmp_path):
    target = _genzoo_folder(tmp_path / "prepared", "old")
    (target / "notes.txt").write_text("mine")
    with (
        pytest.raises(layout.NotGenzooOutput, match="holds notes.txt, which genzoo did not write"),
        layout.replacing_dir(target, "prepared-data") as tmp,
    ):
        _write_version(tmp, "new")
    assert (target / "notes.txt").read_text() == "mine"


def test_a_folder_of_another_kind_is_refused(tmp_path):
    target = _genzoo_folder(tmp_path / "out", "old", kind="synthetic-dataset")
    with pytest.raises(layout.NotGenzooOutput, match="not a genzoo prepared-data folder"):
        layout.check_replaceable(target, "prepared-data")


def test_a_folder_written_before_the_mark_is_replaced(tmp_path):
    target = tmp_path / "prepared"
    target.mkdir()
    old = {"source": "digits", "shape": [1, 8, 8], "levels": 17, "num_classes": 10,
           "class_names": list("0123456789"), "seed": 0, "splits": {}}  # fmt: skip
    (target / "manifest.json").write_text(json.dumps(old))
    (target / "train.npz").write_bytes(b"old")
    with layout.replacing_dir(target, "prepared-data") as tmp:
        _write_version(tmp, "new")
    assert read_json(target / "manifest.json")["made_by"] == "genzoo"
    # a manifest.json of some other program (not the keys genzoo wrote) is not genzoo's
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"name": "my project"}))
    with pytest.raises(layout.NotGenzooOutput, match=f"{other}: not a genzoo"):
        layout.check_replaceable(other, "prepared-data")


def test_a_link_at_the_target_or_inside_it_is_refused(tmp_path):
    elsewhere = _genzoo_folder(tmp_path / "elsewhere", "theirs")
    link = tmp_path / "prepared"
    link.symlink_to(elsewhere, target_is_directory=True)
    with (
        pytest.raises(layout.NotGenzooOutput, match=f"{link}: is a symbolic link"),
        layout.replacing_dir(link, "prepared-data") as tmp,
    ):
        _write_version(tmp, "new")
    assert link.is_symlink() and read_json(elsewhere / "manifest.json")["v"] == "theirs"
    # a class folder linking to its parent, inside a dataset genzoo wrote
    ds = _genzoo_folder(tmp_path / "synthetic", "old", kind="synthetic-dataset")
    (ds / "train.npz").unlink()
    (ds / "images.npz").write_bytes(b"old")
    (ds / "png").mkdir()
    (ds / "png" / "3").symlink_to(ds, target_is_directory=True)
    with pytest.raises(layout.NotGenzooOutput, match=r"png/3: a symbolic link inside"):
        layout.check_replaceable(ds, "synthetic-dataset")
    assert (ds / "images.npz").read_bytes() == b"old"


def test_dvcs_links_to_its_cache_are_replaced_and_the_cache_kept(tmp_path):
    """With DVC's ``cache.type: symlink``, ``dvc checkout`` leaves each file of data/prepared a link
    into DVC's cache: the folder is genzoo's all the same (it refused it), and replacing it
    leaves the cache's files as they were. A link elsewhere is still refused."""
    import hashlib

    target = _genzoo_folder(tmp_path / "prepared", "old")
    (target / "test.npz").write_bytes(b"old test split")
    cached = {}
    for f, layout_of in zip(sorted(target.iterdir()), ["files/md5", "files/md5", ""], strict=True):
        digest = hashlib.md5(f.read_bytes()).hexdigest()  # DVC 3's cache layout, then DVC 2's
        cached[f.name] = tmp_path / ".dvc" / "cache" / layout_of / digest[:2] / digest[2:]
        cached[f.name].parent.mkdir(parents=True, exist_ok=True)
        f.replace(cached[f.name])
        f.symlink_to(cached[f.name])
    kept = {name: path.read_bytes() for name, path in cached.items()}
    with layout.replacing_dir(target, "prepared-data") as tmp:
        _write_version(tmp, "new")
    assert read_json(target / "manifest.json")["v"] == "new"
    assert not any(p.is_symlink() for p in target.iterdir())
    assert {name: path.read_bytes() for name, path in cached.items()} == kept
    # a link whose cache file `dvc gc` removed since holds nothing: replaced too
    gone = tmp_path / ".dvc" / "cache" / "files" / "md5" / "ab" / ("c" * 30)
    (target / "val.npz").symlink_to(gone)
    layout.check_replaceable(target, "prepared-data")
    # a link to a file that is not in a DVC cache: refused as before
    other = tmp_path / "mine.npz"
    other.write_bytes(b"mine")
    (target / "train.npz").unlink()
    (target / "train.npz").symlink_to(other)
    with pytest.raises(layout.NotGenzooOutput, match=r"train.npz: a symbolic link inside"):
        layout.check_replaceable(target, "prepared-data")


def test_a_new_folder_without_genzoos_mark_is_not_put_in_place(tmp_path):
    target = _genzoo_folder(tmp_path / "prepared", "old")
    with (
        pytest.raises(RuntimeError, match="lacks genzoo's mark"),
        layout.replacing_dir(target, "prepared-data") as tmp,
    ):
        (tmp / "manifest.json").write_text("{}")
    assert read_json(target / "manifest.json")["v"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_families_named_for_a_stage_must_be_in_params_and_trained(tmp_path):
    """`--families` of `genzoo usefulness` and `genzoo judge`: one check, naming what is wrong."""
    from genzoo.tasks.errors import ModelNotFound, UsageError

    params = validate(tiny_params(tmp_path, families=["vae", "gan"]))
    (tmp_path / "runs" / "gan").mkdir(parents=True)
    (tmp_path / "runs" / "gan" / "model.json").write_text("{}")
    assert layout.trained_families(params, "gan,gan") == ["gan"]
    assert layout.trained_families(params, ["gan"]) == ["gan"]
    with pytest.raises(UsageError, match=r"--families: nope not in params \(families: vae, gan\)"):
        layout.trained_families(params, "gan,nope")
    with pytest.raises(UsageError, match="none given"):
        layout.trained_families(params, ",")
    with pytest.raises(ModelNotFound, match="vae: not trained under .*runs"):
        layout.trained_families(params, ["gan", "vae"])


def test_a_record_names_paths_inside_the_project_relative_to_it(tmp_path, monkeypatch):
    from genzoo.tasks.layout import shown

    (tmp_path / "project" / "runs").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    assert shown(tmp_path / "project" / "runs" / "vae" / "model.json") == "runs/vae/model.json"
    assert shown(tmp_path / "link" / "runs") == "runs"  # the same folder through a link
    assert shown("runs/vae") == "runs/vae"  # relative: as given
    assert shown(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")  # outside: absolute
