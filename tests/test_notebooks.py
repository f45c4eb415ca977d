"""The course notebooks in docs/tutorials/: committed without outputs, and each runs top to bottom.

Every notebook is executed with nbclient at its smoke budget (``PVAE_BUDGET=smoke``) on the small
fake MNIST of ``conftest.py``, on one thread, in a scratch folder. A cell that raises fails the
test with that cell's source and traceback; the notebooks' own asserts (for example log p(x) >=
ELBO for every image) make this a test of the library's numbers, not only that the code runs.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

TUTORIALS = Path(__file__).resolve().parent.parent / "docs" / "tutorials"
# The course, in order; a new notebook must be added here too, so that none is skipped silently.
EXPECTED = {
    "01_graphical_model.ipynb",
    "02_elbo_gap.ipynb",
    "03_swapping_parts.ipynb",
    "04_log_px.ipynb",
    "05_beyond_z_to_x.ipynb",
}
CELL_TIMEOUT = 300  # seconds per cell; at the smoke budget a whole notebook takes well under a minute


def notebooks() -> list[Path]:
    return sorted(TUTORIALS.glob("*.ipynb"))


def test_the_tutorials_folder_holds_exactly_the_course() -> None:
    found = {p.name for p in notebooks()}
    assert found == EXPECTED, f"missing: {sorted(EXPECTED - found)}; not listed in EXPECTED: {sorted(found - EXPECTED)}"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    """Outputs are made by running the notebook, never committed: no outputs, no execution counts."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: code cells {dirty} hold outputs or execution counts; strip them, e.g. "
                       f"jupyter nbconvert --clear-output --inplace {path.name}")
    timed = [i for i, cell in enumerate(nb.cells) if "execution" in cell.get("metadata", {})]
    assert not timed, f"{path.name}: cells {timed} hold execution timings in their metadata; strip them"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_notebook_structure(path: Path) -> None:
    """A page title first (the docs site renders each notebook as a page), and a budget that the
    environment chooses, with the full budget explained."""
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and re.match(r"# \S", first.source), \
        f"{path.name}: the first cell must be Markdown starting with a '# Title' heading"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and 'BUDGET = os.environ.get("PVAE_BUDGET", "smoke")' in code[0].source, \
        f"{path.name}: the first code cell must set BUDGET from $PVAE_BUDGET (default smoke)"
    text = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert "PVAE_BUDGET=full" in text, f"{path.name}: say in Markdown how to run it at the full budget"


def _stderr_warnings(nb: object) -> list[str]:
    lines = []
    for i, cell in enumerate(nb.cells):  # type: ignore[attr-defined]
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines += [f"cell {i}: {line}" for line in output["text"].splitlines() if "Warning" in line]
    return lines


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_at_the_smoke_budget(
    path: Path, fake_mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebook runs top to bottom on the fake MNIST, on one thread, with no cell raising and
    no warning printed; its run folders go to a scratch folder."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    monkeypatch.setenv("PVAE_BUDGET", "smoke")
    monkeypatch.setenv("PVAE_DATA_DIR", str(fake_mnist_root))
    monkeypatch.setenv("PVAE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The kernel must be this interpreter (the project's environment), not another python on PATH;
    # this manager is only asked for its command line, and NotebookClient starts (and stops) its own.
    command = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert Path(command[0]).resolve() == Path(sys.executable).resolve(), command
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    tic = time.perf_counter()
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / path.name)  # the executed notebook, to look at when a cell fails
    seconds = time.perf_counter() - tic
    print(f"{path.name}: {seconds:.1f} s at the smoke budget")
    warnings = _stderr_warnings(nb)
    assert not warnings, f"{path.name} printed warnings:\n" + "\n".join(warnings)
