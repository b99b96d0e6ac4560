"""notebooks/01-explore-leads.ipynb runs top to bottom on committed data and defines no logic."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from leadscore.config import project_root

NOTEBOOK = project_root() / "notebooks" / "01-explore-leads.ipynb"


@pytest.fixture(scope="module")
def notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_committed_notebook_has_no_outputs(notebook: nbformat.NotebookNode) -> None:
    nbformat.validate(notebook)
    for cell in code_cells(notebook):
        assert cell.outputs == [] and cell.execution_count is None


def test_notebook_imports_leadscore_and_defines_no_logic(notebook: nbformat.NotebookNode) -> None:
    sources = [cell.source for cell in code_cells(notebook)]
    assert any("from leadscore" in s or "import leadscore" in s for s in sources)
    for source in sources:
        tree = ast.parse(source)
        defined = [
            node for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda)
        ]
        assert defined == [], f"notebooks explore; logic belongs in leadscore:\n{source}"


@pytest.mark.slow
def test_notebook_runs_in_the_project_venv(
    notebook: nbformat.NotebookNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = nbformat.from_dict(notebook)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(
        nb, kernel_name="python3", timeout=180, allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    # the kernelspec's bare "python" must be this venv's
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    client.execute()

    text = []
    for cell in code_cells(nb):
        for output in cell.outputs:
            assert output.output_type != "error", output
            if output.output_type == "stream" and output.name == "stdout":
                text.append(output.text)
            elif "data" in output:
                text.append(output.data.get("text/plain", ""))
    joined = "\n".join(text)
    kernel_python = text[-1].strip()
    assert Path(kernel_python).resolve() == Path(sys.executable).resolve()
    assert "41,188 leads, 4,640 converted (11.3%)" in joined
    assert "cellular" in joined and "telephone" in joined
    assert "referral_programme" in joined, "the synthetic CRM's channels are explored"
    features_line = next(line for line in joined.splitlines() if line.startswith("features:"))
    assert "age" in features_line and "duration" not in features_line
    assert "dropped: duration" in joined


PRODUCT = project_root() / "notebooks" / "02-train-explain-score.ipynb"


def _texts(nb: nbformat.NotebookNode) -> list[str]:
    text = []
    for cell in code_cells(nb):
        for output in cell.outputs:
            assert output.output_type != "error", output
            if output.output_type == "stream":
                text.append(output.text)
            elif "data" in output:
                text.append(output.data.get("text/plain", ""))
    return text


def test_product_notebook_is_committed_with_its_outputs() -> None:
    """The second notebook is read on GitHub as it ran: outputs kept, no logic, no PII."""
    import re

    nb = nbformat.read(PRODUCT, as_version=4)
    nbformat.validate(nb)
    for cell in code_cells(nb):
        assert cell.execution_count is not None, cell.source
        tree = ast.parse(cell.source)
        assert not [n for n in ast.walk(tree)
                    if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                                  | ast.Lambda)], cell.source
    assert sum(bool(cell.outputs) for cell in code_cells(nb)) >= 6
    joined = "\n".join(_texts(nb))
    assert "can be used as a forecast" in joined or "sum the probabilities" in joined
    assert "'drifted': []" in joined and "'rejected': 0" in joined
    assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", joined), "no email address in the outputs"
    assert "Traceback" not in joined


@pytest.mark.slow
def test_product_notebook_runs_and_gives_its_committed_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    committed = nbformat.read(PRODUCT, as_version=4)
    nb = nbformat.from_dict(committed)
    for cell in code_cells(nb):
        cell.outputs, cell.execution_count = [], None
    client = NotebookClient(nb, kernel_name="python3", timeout=600, allow_errors=False,
                            resources={"metadata": {"path": str(PRODUCT.parent)}})
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    client.execute()
    # seeded data, single-threaded deterministic LightGBM: the same numbers as committed
    assert _texts(nb)[1:] == _texts(committed)[1:]
