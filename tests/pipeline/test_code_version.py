"""A stage's code version covers exactly the source files it runs (pipeline/code_version.py)."""

import shutil
from pathlib import Path

import pytest

from pipeline.code_version import PROJECT_ROOT, code_version, source_files

STAGES = ("stages.subsets", "stages.pretrain", "stages.finetune", "stages.distill", "stages.evaluate", "reports")


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project's packages that a test may edit."""
    for package in ("stages", "reports", "pipeline"):
        shutil.copytree(PROJECT_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def versions(root: Path) -> dict[str, str]:
    return {module: code_version(module, root) for module in STAGES}


def changed_after_editing(root: Path, file: str) -> set[str]:
    before = versions(root)
    with (root / file).open("a") as handle:
        handle.write("\n# edited\n")
    after = versions(root)
    return {module for module in STAGES if after[module] != before[module]}


def test_a_version_is_stable_and_names_the_distribution():
    version = code_version("stages.pretrain")
    assert version == code_version("stages.pretrain")
    assert version.startswith("0.") and "+" in version


def test_the_copy_has_the_versions_of_the_checkout(project):
    assert versions(project) == versions(PROJECT_ROOT)


def test_files_follow_imports_and_enclosing_packages():
    files = {path.relative_to(PROJECT_ROOT).as_posix() for path in source_files("stages.pretrain")}
    assert {"stages/__init__.py", "stages/pretrain.py", "stages/losses/nt_xent.py", "stages/models/resnet.py"} <= files
    assert "stages/training/__init__.py" in files and "stages/training/loop.py" in files
    assert not any(name.startswith(("stages/benchmark/", "reports/")) for name in files)
    assert "stages/losses/distillation.py" not in files and "stages/finetune.py" not in files


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("stages/benchmark/throughput.py", set()),  # the benchmark is no stage's code
        ("stages/distill.py", {"stages.distill"}),
        ("stages/losses/distillation.py", {"stages.distill"}),
        ("stages/losses/nt_xent.py", {"stages.pretrain"}),
        ("stages/evaluation/feature_quality.py", {"stages.evaluate", "stages.finetune"}),  # probe: fine-tuning CV
        ("stages/models/resnet.py", {"stages.pretrain", "stages.finetune", "stages.distill", "stages.evaluate"}),
        ("stages/data/sources.py", set(STAGES) - {"reports"}),
        ("reports/__init__.py", {"reports"}),
        ("pipeline/manifest.py", {"reports"}),  # the report reads the manifests through it
        ("pipeline/flow.py", set()),  # orchestration runs no stage's code
    ],
)
def test_an_edit_changes_the_version_of_the_stages_that_run_the_file_only(project, file, expected):
    assert changed_after_editing(project, file) == expected


def test_non_source_files_do_not_count(project):
    before = versions(project)
    (project / "stages" / "notes.txt").write_text("not code\n")
    (project / "stages" / "__pycache__").mkdir(exist_ok=True)
    (project / "stages" / "__pycache__" / "pretrain.py").write_text("cached = 1\n")
    assert versions(project) == before


def test_an_unknown_module_is_named():
    with pytest.raises(FileNotFoundError, match=r"stages\.nothing"):
        code_version("stages.nothing")


def test_a_spurious_ast_recursion_mismatch_is_parsed_again(monkeypatch):
    """CPython 3.11's race between two threads building ASTs: the next parse succeeds, and the version is the same."""
    import ast

    import pipeline.code_version as versions

    expected = versions.code_version("stages.subsets")
    real, calls = ast.parse, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=45, after=77)")
        return real(*args, **kwargs)

    monkeypatch.setattr(versions.ast, "parse", flaky)
    assert versions.code_version("stages.subsets") == expected and len(calls) > 1
