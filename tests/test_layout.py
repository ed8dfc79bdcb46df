"""The tree's rules, checked: which subpackage may import which (chalicelib.MAY_IMPORT), what
each artifact's entry points pull in, and no sys.path edits in the packaged code."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import chalicelib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "chalicelib"


def _imported_subpackages(path: Path) -> set[tuple[int, str]]:
    """(line, subpackage) of every chalicelib import in a module, those inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "chalicelib":
            parts = node.module.split(".")
            for name in [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]:
                found.add((node.lineno, name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "chalicelib":
                    found.add((node.lineno, parts[1] if len(parts) > 1 else ""))
    return found


def test_every_module_lives_in_a_subpackage_the_rule_names():
    assert {path.name for path in PACKAGE.glob("*.py")} == {"__init__.py"}
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"} == \
        set(chalicelib.MAY_IMPORT)


@pytest.mark.parametrize("subpackage", sorted(chalicelib.MAY_IMPORT))
def test_imports_follow_the_dependency_rule(subpackage):
    allowed = chalicelib.MAY_IMPORT[subpackage]
    broken = [f"{path.relative_to(ROOT)}:{line} imports chalicelib.{name or '(the package)'}"
              for path in sorted((PACKAGE / subpackage).glob("*.py"))
              for line, name in sorted(_imported_subpackages(path)) if name not in allowed]
    assert not broken, f"{subpackage} may import only {sorted(allowed)}:\n" + "\n".join(broken)


def _import_with_blocked(modules: list[str], blocked: list[str]) -> subprocess.CompletedProcess:
    """Import modules in a fresh interpreter where the blocked top-level packages cannot load."""
    script = f"""
import importlib, sys
from importlib.abc import MetaPathFinder
BLOCKED = {blocked!r}
class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, Blocker())
for module in {modules!r}:
    importlib.import_module(module)
print("imported", len({modules!r}))
"""
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _modules(*subpackages: str) -> list[str]:
    return [f"chalicelib.{subpackage}.{path.stem}" for subpackage in subpackages
            for path in sorted((PACKAGE / subpackage).glob("*.py")) if path.stem != "__init__"]


def test_the_api_function_imports_without_tensorflow_or_numpy():
    """The API's zip holds no TensorFlow or NumPy: app.py (with its queue handler, which imports
    the scoring runs lazily), api, state and core must import without them."""
    result = _import_with_blocked(["app", *_modules("api", "state", "core")], ["tensorflow", "numpy", "keras"])
    assert result.returncode == 0, result.stderr[-3000:]


def test_scoring_without_the_service_imports_no_rest_stack():
    """`tfbatch score` runs without any service: the scoring side and the command never import
    Chalice, pydantic or PyJWT."""
    modules = [*_modules("scoring"), "chalicelib.local.cli"]
    result = _import_with_blocked(modules, ["chalice", "pydantic", "jwt"])
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_blocker_itself_refuses_what_it_blocks():
    result = _import_with_blocked(["chalicelib.scoring.engine"], ["tensorflow"])
    assert result.returncode != 0 and "tensorflow is blocked" in result.stderr


def test_packaged_code_never_edits_sys_path():
    edits = [str(path.relative_to(ROOT)) for path in [ROOT / "app.py", *PACKAGE.rglob("*.py")]
             if "sys.path" in path.read_text()]
    assert not edits
