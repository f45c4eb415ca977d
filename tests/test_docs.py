"""The documentation site: it builds in strict mode (a broken link, an unresolved reference or a
docstring that does not render fails), its API reference is generated from the docstrings and
covers every public name, every relative link in README.md and docs/ resolves on disk (as on
GitHub), and the docstring examples in pvae/ run."""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pvae

# A module-scoped fixture here is costly to build: the file's tests share one worker (pytest-xdist).
pytestmark = pytest.mark.xdist_group("test_docs")

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")


def _links() -> list[tuple[Path, str, str]]:
    return [(doc, text, target) for doc in DOCS for text, target in LINK.findall(doc.read_text())]


@pytest.mark.parametrize(("doc", "text", "target"), _links(), ids=lambda v: v.name if isinstance(v, Path) else str(v)[:40])
def test_relative_links_resolve(doc: Path, text: str, target: str) -> None:
    """A relative link points at an existing file; a link named after a symbol points at a file defining it."""
    if re.match(r"^[a-z]+://", target) or target.startswith("#"):
        return
    path = (doc.parent / target.split("#")[0]).resolve()
    assert path.exists(), f"{doc.name}: link [{text}]({target}) points at missing {path}"
    symbol = text.strip("`").split(".")[-1].split("(")[0]
    if path.suffix == ".py" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", symbol) and text.startswith("`"):
        source = path.read_text()
        defined = re.search(rf"^\s*(def|class)\s+{symbol}\b|^{symbol}\s*[:=]", source, re.M)
        module_named = path.stem == symbol or path.parent.name == symbol
        assert defined or module_named, f"{doc.name}: [{text}] links to {path.name}, which defines no {symbol}"


# Session-scoped: pytest-xdist may run another file's tests between this file's, which would tear a
# module-scoped site down and build it again.
@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The site built as ``./run.sh docs`` builds it (strict), without executing the notebooks."""
    out = tmp_path_factory.mktemp("site")
    command = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
        "-D", "nb_execution_mode=off", "-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # Python warnings are not Sphinx warnings
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    return proc, out / "html"


def test_site_builds_in_strict_mode(site: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """No warning at all: every link and cross-reference resolves and every docstring renders."""
    proc, _ = site
    assert proc.returncode == 0, f"sphinx -W -n failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"


def _page(site: tuple[subprocess.CompletedProcess[str], Path], name: str) -> str:
    path = site[1] / name
    assert path.exists(), f"the build wrote no {name}:\n{site[0].stderr}"
    return path.read_text()


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).replace("&#8217;", "'").strip()


def test_api_reference_has_signatures_and_fields(site: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """The API pages are rendered from the docstrings: signatures, and field lists as fields."""
    page = _page(site, "api/runs.html")
    signature = re.search(r'<dt class="sig sig-object py" id="pvae\.runs\.evaluate\.evaluate_run">(.*?)</dt>', page, re.S)
    assert signature, "api/runs.html documents no pvae.runs.evaluate.evaluate_run"
    assert "evaluate_run(run_dir, *, split='test', num_images=None, elbo_samples=1, num_samples=None, method='is'" in _text(signature.group(1))
    following = page.find('<dt class="sig sig-object py"', signature.end())
    body = _text(page[signature.end():following if following > 0 else None])
    assert "Parameters:" in body and "num_samples (int | None)" in body and "Returns:" in body, body[:400]
    for name in sorted(f"api/{page.stem}.html" for page in (ROOT / "docs" / "api").glob("*.md")):
        shown = _text(re.sub(r"<(pre|code)\b.*?</\1>", "", _page(site, name), flags=re.S))
        assert not re.search(r":(param|returns?|raises|ivar)\b", shown), f"{name}: a field list did not render"


def test_formulas_render_as_mathjax(site: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """A docstring's ``.. math::`` block and a page's ``$$ ... $$`` become MathJax display math."""
    math = re.compile(r'<div class="math notranslate nohighlight">\s*\\\[(.*?)\\\]\s*</div>', re.S)
    docstring_math = [m.group(1) for m in math.finditer(_page(site, "api/inference.html"))]
    assert any(r"\log \hat p_K(x_i)" in m for m in docstring_math), "pvae.inference.importance's formula is not rendered"
    page_math = [m.group(1) for m in math.finditer(_page(site, "math-to-code.html"))]
    assert any(r"\mathrm{ELBO}(x)" in m for m in page_math), "math-to-code.md's formulas are not rendered"
    assert "mathjax" in _page(site, "math-to-code.html").lower()


def test_every_public_name_and_module_is_documented(site: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """Each name of ``pvae.__all__`` and each module of pvae has an entry in the API reference."""
    from sphinx.util.inventory import InventoryFile

    inventory_path = site[1] / "objects.inv"
    assert inventory_path.exists(), site[0].stderr
    with inventory_path.open("rb") as f:
        inventory = InventoryFile.load(f, "", os.path.join)
    entries_by_kind = getattr(inventory, "data", inventory)  # an _Inventory from Sphinx 8.2 on, a dict before
    documented = {name for kind, entries in entries_by_kind.items() if kind.startswith("py:") for name in entries}
    modules = {m.name for m in pkgutil.walk_packages(pvae.__path__, "pvae.") if not m.name.endswith("__main__")}
    assert sorted({"pvae", *modules} - documented) == [], "modules missing from the API pages (docs/api/*.md)"
    missing = []
    for name in pvae.__all__:
        obj = getattr(pvae, name)
        qualname = getattr(obj, "__qualname__", None)
        if name == "__version__":
            candidates = {"pvae.version.__version__"}
        elif qualname and getattr(obj, "__module__", "").startswith("pvae"):
            candidates = {f"{obj.__module__}.{qualname}"}
        else:  # a constant: documented where it is defined, with a #: comment
            candidates = {d for d in documented if d.endswith(f".{name}")}
        if not candidates & documented:
            missing.append(name)
    assert missing == [], f"public names missing from the API reference: {missing}"


def test_docstring_examples_run() -> None:
    """Every ``>>>`` example in pvae's docstrings gives the output it shows."""
    failures, tried = 0, 0
    for info in pkgutil.walk_packages(pvae.__path__, "pvae."):
        if info.name.endswith("__main__"):  # importing it runs the command line
            continue
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
        failures += result.failed
        tried += result.attempted
    assert tried > 0, "no docstring examples found: the docs promise some"
    assert failures == 0, f"{failures} of {tried} docstring examples failed (run pytest -s to see them)"
