"""The layering rules of docs/architecture.md, read from the source's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"plugin": "toplens", "analyses": "toplens.analyses"}
EDITORS = ("rome", "top", "rets", "memit")


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import; use absolute toplens.* imports")
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


SOURCES = {_module(p): _imports(p) for folder in PACKAGES for p in sorted((ROOT / folder).rglob("*.py"))}


def _violations(rule) -> list[str]:
    return sorted(f"{mod} imports {name}" for mod, names in SOURCES.items() for name in names if rule(mod, name))


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_no_editor_imports_another():
    editors = [f"toplens.editors.{e}" for e in EDITORS]
    assert not _violations(lambda mod, name: mod in editors and any(
        _under(name, other) for other in editors if other != mod))


def test_plugin_never_imports_the_analyses():
    assert not _violations(lambda mod, name: not _under(mod, "toplens.analyses") and _under(name, "toplens.analyses"))


@pytest.mark.parametrize("forbidden", ["argparse", "matplotlib", "toplens.analyses.cli"])
def test_core_code_imports_no_cli_or_plotting(forbidden):
    """Only the CLI parses arguments, and only the figures module (and the CLI) plot."""
    def is_core(mod: str) -> bool:
        return not _under(mod, "toplens.analyses.cli") and not (forbidden == "matplotlib" and _under(
            mod, "toplens.analyses.figures"))
    assert not _violations(lambda mod, name: is_core(mod) and _under(name, forbidden))


def test_the_layers_import_downward_only():
    """model imports nothing of toplens above it; core imports only model; editors no analyses."""
    assert not _violations(lambda mod, name: _under(mod, "toplens.model") and _under(name, "toplens")
                           and not _under(name, "toplens.model"))
    assert not _violations(lambda mod, name: _under(mod, "toplens.core") and _under(name, "toplens")
                           and not (_under(name, "toplens.model") or _under(name, "toplens.core")))


def test_files_stay_small():
    sizes = {p: len(p.read_text(encoding="utf-8").splitlines()) for folder in PACKAGES
             for p in (ROOT / folder).rglob("*.py")}
    assert not {str(p.relative_to(ROOT)): n for p, n in sizes.items() if n > 320}
    assert not {str(p.relative_to(ROOT)): n for p, n in sizes.items()
                if p.parent.name == "editors" and p.stem in EDITORS and n > 225}
