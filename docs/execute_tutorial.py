"""Run docs/tutorial.ipynb top to bottom on the bundled model and store its outputs in place.

Progress bars and warnings (stderr) are dropped from what is stored, since they name local paths
and change from run to run; tests/docs/test_tutorial.py checks that every other output kind is
reproduced by a fresh run. Usage: ``python docs/execute_tutorial.py`` (a few minutes on the CPU).
"""

from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parent / "tutorial.ipynb"


def main() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    nbformat.write(nb, NOTEBOOK)


if __name__ == "__main__":
    main()
