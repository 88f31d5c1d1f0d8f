"""The shape of analyses/: which modules may import what, file sizes, and the packaging list."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANALYSES = ROOT / "analyses"
MODULES = sorted(ANALYSES.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _name(path: Path) -> str:
    return str(path.relative_to(ANALYSES))


@pytest.mark.parametrize("path", [p for p in MODULES if "cli" not in p.relative_to(ANALYSES).parts], ids=_name)
def test_the_core_imports_no_cli_and_no_argparse(path):
    bad = {n for n in _imports(path) if n == "argparse" or n.startswith("toplens.analyses.cli")}
    assert not bad, f"{_name(path)} imports {sorted(bad)}"


def test_figures_is_plotting_only():
    imported = _imports(ANALYSES / "figures.py")
    assert not {n for n in imported if n.startswith(("toplens.editors", "toplens.analyses.cli", "argparse"))}


def test_the_plugin_does_not_import_the_analyses():
    bad = [str(p.relative_to(ROOT)) for p in (ROOT / "plugin").rglob("*.py")
           if any(n.startswith("toplens.analyses") for n in _imports(p))]
    assert not bad


def test_datasets_and_builder_do_not_import_each_other_both_ways():
    builder = _imports(ANALYSES / "evaluation" / "builder.py")
    assert not {n for n in builder if n.startswith(("toplens.analyses.evaluation.datasets",
                                                    "toplens.analyses.evaluation.known_facts"))}


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_is_over_300_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 300


def test_every_analyses_package_is_listed_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = set(re.findall(r'"(toplens\.analyses[\w.]*)"', text.split("packages = [", 1)[1].split("]", 1)[0]))
    found = {"toplens.analyses" + "".join(f".{part}" for part in p.parent.relative_to(ANALYSES).parts)
             for p in ANALYSES.rglob("__init__.py")}
    assert listed == found
    assert '"toplens.analyses.evaluation" = ["data/*.json"]' in text
    assert sorted(p.name for p in (ANALYSES / "evaluation" / "data").glob("*.json")) == [
        "builtin_facts.json", "relations.json"]
