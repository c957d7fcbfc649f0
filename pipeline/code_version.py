"""The code version of a stage: a hash of exactly the source files that stage runs.

A stage program imports building blocks, which import others; following the `import` statements of the project's
own packages (statically, nothing is imported) from the program gives the files it runs. Editing one of them
changes that stage's fingerprint, and so reruns it and what depends on it; editing anything else (the benchmark,
another stage, the reports for a training stage) does not.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("stages", "reports", "pipeline")  # stages/ never imports pipeline/ (tests/stages/test_layering.py)
DISTRIBUTION = "simclrv2-pipeline"


def code_version(module: str, root: Path | str = PROJECT_ROOT) -> str:
    """`<distribution version>+<12 hex digits>`: a hash of the path and content of every source file `module`
    (e.g. "stages.pretrain", or "reports" for the report) runs. Needs no git."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in source_files(module, root):
        content = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(content)}\0".encode())
        digest.update(content)
    return f"{_distribution_version()}+{digest.hexdigest()[:12]}"


def source_files(module: str, root: Path | str = PROJECT_ROOT) -> list[Path]:
    """The files of `module`, of every project module it imports directly or not, and of their packages'
    `__init__.py` (Python runs those on import), sorted."""
    root = Path(root)
    seen: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        for path in _files_of(name, root):
            if path not in seen:
                seen.add(path)
                pending += _project_imports(path, root)
    return sorted(seen)


def _files_of(module: str, root: Path) -> list[Path]:
    """The module's own file (or its package's `__init__.py`) and the `__init__.py` of each enclosing package."""
    parts = module.split(".")
    files = [root.joinpath(*parts[:depth], "__init__.py") for depth in range(1, len(parts))]
    package, plain = root.joinpath(*parts, "__init__.py"), root.joinpath(*parts).with_suffix(".py")
    files.append(package if package.is_file() else plain)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"module {module!r} has no source file {missing[0]} under {root}")
    return files


def _project_imports(path: Path, root: Path) -> list[str]:
    """Project modules named by the import statements of one file. `from a.b import c` counts `a.b.c` when that is
    a module itself, else `a.b` (then `c` is a name inside it)."""
    found = []
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [
                f"{node.module}.{alias.name}" for alias in node.names if _is_module(f"{node.module}.{alias.name}", root)
            ]
    return [name for name in found if name.split(".")[0] in PROJECT_PACKAGES]


def _parse(path: Path, attempts: int = 5) -> ast.Module:
    """`ast.parse`, again when CPython 3.11 raises a spurious "AST constructor recursion depth mismatch": the depth
    it checks is kept per interpreter, not per thread, so another thread building an AST at the same moment trips it
    (seen once in the rank flow of a Prefect worker, in CI)."""
    source = path.read_bytes()
    for attempt in range(attempts):
        try:
            return ast.parse(source, filename=str(path))
        except SystemError as error:
            if "recursion depth mismatch" not in str(error) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _distribution_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"  # running from a checkout that was never installed
