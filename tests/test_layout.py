"""The package's layout: one folder per layer, imports running downwards only, and a light ``import pvae``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pvae

PACKAGE = Path(pvae.__file__).resolve().parent

# Lowest first. The contracts at the package's root (the model protocol, errors, devices, the
# processes of a distributed run) may be imported by every layer; the command line by none.
LAYERS: list[tuple[str, ...]] = [
    ("protocol", "errors", "devices", "distributed", "version"),
    ("data",),
    ("parts",),
    ("models",),
    ("inference",),
    ("training",),
    ("views",),
    ("runs",),
    ("cli", "__main__", "__init__"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _layer(module: str) -> str:
    """``pvae.inference.ais`` -> ``inference``; ``pvae`` itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every ``pvae`` module the file imports, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("pvae."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("pvae.")]
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts), path))
    return out


def test_every_module_belongs_to_a_layer() -> None:
    """Each module of pvae/ lies in one of the layers' folders or is one of the root's named modules."""
    stray = [name for name, _ in _modules() if _layer(name) not in RANK]
    assert not stray, f"modules outside every layer (add them to a layer's folder): {stray}"


def test_imports_run_downwards_only() -> None:
    """No module imports a module of a higher layer (e.g. inference never imports training, runs or views)."""
    upward = []
    for name, path in _modules():
        for line, target in _imports(path):
            if RANK[_layer(target)] > RANK[_layer(name)]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({_layer(name)}) imports {target}")
    assert not upward, "imports that run upwards:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The import reader finds imports inside functions too, so a lazy upward import cannot hide."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from pvae.runs.train import train\n    import pvae.views.plots\n")
    assert _imports(path) == [(2, "pvae.runs.train"), (3, "pvae.views.plots")]


def test_import_pvae_loads_no_matplotlib() -> None:
    """``import pvae``, and reading names that draw nothing, loads no matplotlib (Pyro itself loads graphviz)."""
    code = ("import sys, pvae; pvae.TrainConfig; pvae.VAE; pvae.importance_estimate; pvae.evaluate_run; "
            "print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.stdout.strip() == "False", done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(pvae.__all__))
def test_every_public_name_resolves(name: str) -> None:
    """Every name in ``pvae.__all__`` reads back, from the module ``pvae._LAZY`` says defines it."""
    value = getattr(pvae, name)
    if name != "__version__":
        module = pvae._LAZY[name]
        assert getattr(sys.modules[module], name) is value, f"pvae.{name} is not {module}.{name}"
