"""Every notebook runs top to bottom in a fresh kernel that imports this checkout's taskgrad."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01_lazy_task_graphs.ipynb", "02_autodiff.ipynb",
        "03_training_an_mlp.ipynb", "04_parallel_and_profiling.ipynb"]


def outputs_of(nb, mime):
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
            if mime in o.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))  # the kernel inherits it
    nb = nbformat.read(path, as_version=4)
    # a last cell tells which taskgrad the kernel imported
    nb.cells.append(nbformat.v4.new_code_cell("import taskgrad; print(taskgrad.__file__)"))
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on error
    assert nb.cells[-1].outputs[0].text.strip().startswith(str(ROOT / "src"))
    assert outputs_of(nb, "image/svg+xml"), "every notebook draws at least one graph"
    if not path.name.startswith("01"):
        assert outputs_of(nb, "image/png"), "notebooks 2-4 show plots"
    assert sum(cell.cell_type == "markdown" for cell in nb.cells) >= 5  # prose tells a story
