"""docs/tutorial.ipynb: its stored outputs are complete (every code cell ran, none raised), and,
under ``-m notebook`` (CI), a fresh top-to-bottom run on the bundled model produces the same kinds
of output in every cell: each stored figure and table is still produced."""

import copy
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # in the test extra; a missing one fails the CI run below

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "tutorial.ipynb"


def _kinds(cell) -> list[tuple]:
    """What a cell showed: stdout, and each display or result by its rich formats (PNG, Markdown...);
    stderr (progress bars, warnings) is left out, as is text/plain beside a rich format."""
    kinds = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and out["name"] == "stdout":
            kinds.append(("stdout",))
        elif out["output_type"] in ("display_data", "execute_result"):
            rich = tuple(sorted(k for k in out["data"] if k != "text/plain")) or ("text/plain",)
            kinds.append((out["output_type"], rich))
        elif out["output_type"] == "error":
            kinds.append(("error", out["ename"]))
    return kinds


def _table_heads(cell) -> list[str]:
    """The first line of every Markdown table a cell displayed (its columns)."""
    return [out["data"]["text/markdown"].splitlines()[0] for out in cell.get("outputs", [])
            if "text/markdown" in out.get("data", {})]


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_stored_notebook_ran_every_cell_without_an_error():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for i, cell in enumerate(_code(nb)):
        assert cell.get("outputs"), f"code cell {i} has no stored output"
        assert not any(k[0] == "error" for k in _kinds(cell)), f"code cell {i} stored an error"
        assert not any(o.get("name") == "stderr" for o in cell["outputs"]), \
            f"code cell {i} stored stderr (progress bars, warnings naming local paths)"
    counts = [c.execution_count for c in _code(nb)]
    assert counts == list(range(1, len(counts) + 1)), "the stored outputs are not one top-to-bottom run"
    assert any(("display_data", ("image/png",)) in _kinds(c) or ("execute_result", ("image/png",)) in _kinds(c)
               for c in _code(nb)), "no stored figure"


@pytest.mark.notebook
def test_a_fresh_run_produces_what_the_notebook_stores():
    nbclient = pytest.importorskip("nbclient")
    stored = nbformat.read(NOTEBOOK, as_version=4)
    fresh = copy.deepcopy(stored)
    nbclient.NotebookClient(fresh, timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    for i, (old, new) in enumerate(zip(_code(stored), _code(fresh))):
        assert _kinds(new) == _kinds(old), f"code cell {i}: stored {_kinds(old)}, now {_kinds(new)}"
        assert _table_heads(new) == _table_heads(old), f"code cell {i}: a table's columns changed"
