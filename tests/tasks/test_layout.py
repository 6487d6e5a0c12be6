"""One home for provenance: each DVC stage's code deps are the files its module imports (the
same list the skip logic hashes), a family's stages read its own model file only, stages never
import each other, and every model variant trains the same way."""

import ast
import shutil

import pytest
import torch
import yaml

from genzoo.models import REGISTRY
from genzoo.tasks import layout
from genzoo.tasks.config import validate
from genzoo.tasks.data import data_spec, load_split
from genzoo.tasks.layout import ROOT, code_files, code_hash, family_files, read_json, train_variant
from genzoo.tasks.prepare import prepare
from tests.conftest import tiny_params

STAGES = {"prepare", "train", "evaluate", "detect", "usefulness", "augment", "report", "status"}
GROUND = {"config", "data", "layout", "tracking", "quality", "sample", "latent", "figures"}
CODE_DIRS = ("models/", "tasks/", "metrics/")


def _code_deps(deps: list) -> list[str]:
    names = [d if isinstance(d, str) else next(iter(d)) for d in deps]
    return sorted(d for d in names if d.startswith(CODE_DIRS) and d.endswith(".py"))


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
            assert _code_deps(deps) == list(code_files(module, family)), (name, family)


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


def test_a_variant_is_the_same_whatever_ran_before_and_is_saved_only_when_whole(tmp_path):
    params = validate(tiny_params(tmp_path, steps=4, families=["gan"]))
    prepare(params)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    spec, cfg = data_spec(manifest), params.train_config("gan")

    def stamp(r):
        return {"key": "k", "steps": r.steps}

    a, _ = train_variant(params, "gan", x[:64], y[:64], spec, cfg, tmp_path / "a.json", stamp)
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
