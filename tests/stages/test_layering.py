"""The shape of stages/: stage programs import building blocks only, and nothing in stages/ imports the pipeline,
the reports or Prefect, so that every stage runs alone under `python -m` or `accelerate launch`. Imports are
absolute and name their module, so that a stage's code version (pipeline/code_version.py) can follow them."""

import ast
from pathlib import Path

import pytest

STAGES = Path(__file__).resolve().parents[2] / "stages"
PROGRAMS = ("subsets", "pretrain", "finetune", "distill", "evaluate", "predict", "select", "export")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_stage_program_imports_no_other_stage_program(program):
    others = {f"stages.{name}" for name in PROGRAMS if name != program}
    assert not imported_modules(STAGES / f"{program}.py") & others


def test_building_blocks_import_no_stage_program():
    programs = {f"stages.{name}" for name in PROGRAMS}
    for path in STAGES.glob("*/*.py"):
        assert not imported_modules(path) & programs, path


def test_nothing_in_stages_imports_the_pipeline_the_reports_or_prefect():
    for path in STAGES.rglob("*.py"):
        roots = {name.split(".")[0] for name in imported_modules(path)}
        assert not roots & {"pipeline", "reports", "prefect"}, path


def test_imports_are_absolute_and_name_the_module_they_come_from():
    for path in STAGES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}:{node.lineno}: a relative import"
                assert node.module != "stages", f"{path}:{node.lineno}: import from the defining module instead"
