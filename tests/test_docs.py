"""The docs build: every relative link in README.md and docs/ resolves, docs/api.md matches the
docstrings, and the docstring examples in pvae/ run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pvae

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
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


def test_api_reference_is_current() -> None:
    """docs/api.md equals what docs/build_api.py generates from the docstrings."""
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "build_api.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_docstring_examples_run() -> None:
    """Every ``>>>`` example in pvae's docstrings gives the output it shows."""
    failures, tried = 0, 0
    for info in pkgutil.iter_modules(pvae.__path__, "pvae."):
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
        failures += result.failed
        tried += result.attempted
    assert tried > 0, "no docstring examples found: the docs promise some"
    assert failures == 0, f"{failures} of {tried} docstring examples failed (run pytest -s to see them)"
