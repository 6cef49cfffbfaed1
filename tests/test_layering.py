"""The dependency direction of README's Architecture table, checked on the source (ast).

`graph/` and `operators/` import nothing from `curation/` or `jobs/` and never Ray; inside
`curation/`, only the CLI package imports `curation.cli`. Every import counts, including those
inside functions and `importlib.import_module("...")` / `__import__("...")` with a literal name.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file; relative imports resolved
    against the file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.relative_to(ROOT).parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value))
    return out


def _is(module: str, top: str) -> bool:
    return module == top or module.startswith(top + ".")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def violations(package: str, forbidden: tuple[str, ...], allowed_under: str | None = None) -> list[str]:
    bad = []
    for path in _modules(package):
        rel = path.relative_to(ROOT)
        if allowed_under and rel.parts[: len(allowed_under.split("/"))] == tuple(allowed_under.split("/")):
            continue
        for line, mod in imported_modules(path):
            if any(_is(mod, f) for f in forbidden):
                bad.append(f"{rel}:{line} imports {mod}")
    return bad


@pytest.mark.parametrize("package", ["graph", "operators"])
def test_graph_and_operators_never_import_curation_jobs_or_ray(package):
    assert _modules(package), f"no modules found under {package}/"
    assert violations(package, ("curation", "jobs", "ray")) == []


def test_only_the_cli_imports_the_cli():
    assert violations("curation", ("curation.cli",), allowed_under="curation/cli") == []


def test_the_checker_sees_nested_and_relative_imports(tmp_path, monkeypatch):
    """The checker itself: an import inside a function, a relative import climbing out of the
    package, and an import_module call are all found."""
    pkg = tmp_path / "graph" / "sub"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text(
        "import numpy\n"
        "def f():\n    from curation.storage import schemas\n"
        "from ..x import y\n"
        "import importlib\nimportlib.import_module('curation.cli')\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = [m for _, m in imported_modules(pkg / "m.py")]
    assert "curation.storage" in found and "graph.x" in found and "curation.cli" in found
    assert len(violations("graph", ("curation",))) == 3
