"""The import graph genzoo keeps: flows -> tasks -> (models, metrics); inside tasks/, stages
(modules with a DVC entry point, ``main()``) stand on one floor above the ground-floor modules
(config, layout and provenance, tracking, ...) and never import each other; models/ and
metrics/ know nothing of the pipeline tools."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"prefect", "ray", "mlflow", "dvc"}


def imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute names; in functions too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def is_stage(path: Path) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in ast.parse(path.read_text()).body)


TASKS = sorted(p for p in (ROOT / "tasks").glob("*.py") if p.name != "__init__.py")
STAGES = {p.stem for p in TASKS if is_stage(p)}
GROUND = {p.stem for p in TASKS} - STAGES


def test_there_are_stages_and_a_ground_floor():
    assert {"prepare", "train", "evaluate", "augment", "report"} <= STAGES
    assert {"config", "tracking"} <= GROUND


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_tasks_import_no_stage_and_no_flow(path):
    names = imports(path)
    assert not {n for n in names if n.startswith("genzoo.flows")}, path
    others = {s for s in STAGES if s != path.stem and f"genzoo.tasks.{s}" in names}
    assert not others, (
        f"{path.name} imports the stage(s) {sorted(others)}: move what they share to the ground floor"
    )


@pytest.mark.parametrize(
    "path", sorted([*(ROOT / "models").glob("*.py"), *(ROOT / "metrics").glob("*.py")]), ids=str
)
def test_models_and_metrics_stand_alone(path):
    names = imports(path)
    assert not {n for n in names if n.startswith(("genzoo.tasks", "genzoo.flows"))}, path
    assert not {n.split(".")[0] for n in names} & TOOLS, path
